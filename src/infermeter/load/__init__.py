"""Load patterns: when each request is sent, and how many may be in flight."""

from infermeter.load.schedule import LoadMode, LoadPlan, arrival_offsets, make_plan

__all__ = ["LoadPlan", "LoadMode", "make_plan", "arrival_offsets"]
