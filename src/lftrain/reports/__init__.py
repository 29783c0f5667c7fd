"""What a run leaves for people: the reproducibility manifest (and, later, reports and cards)."""
