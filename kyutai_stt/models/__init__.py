"""Each network defined once, compiled to a plan (see docs/plan.md)."""
