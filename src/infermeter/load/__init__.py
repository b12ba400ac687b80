"""Load patterns: when each request is sent, and how many may be in flight."""

from infermeter.load.schedule import LoadPlan, LoadMode, make_plan, arrival_offsets

__all__ = ["LoadPlan", "LoadMode", "make_plan", "arrival_offsets"]
