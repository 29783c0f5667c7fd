"""Data checks run before any compute is spent: duplicates and near-duplicates (MinHash LSH), train<->eval/test
leakage, conflicting labels, class balance and truncation, label-noise suspects, 13-gram contamination, PII,
and licences. `runner.run_checks` runs them all; `fix.fix_data` writes a cleaned copy. See docs/data-checks.md."""
