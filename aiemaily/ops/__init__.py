"""Operations: liveness, readiness and metrics for the people who run Aiemaily (DESIGN.md, operations)."""
