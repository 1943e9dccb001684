"""Job submission logic that needs more than the JobSpec schema: limits, data shapes."""
