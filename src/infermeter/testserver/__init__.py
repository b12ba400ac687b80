"""testserver"""
