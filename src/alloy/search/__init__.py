"""`alloy search`: the merge parameters searched against measured skills (Optuna, optionally
on Ray). `space` parses the YAML, `splits` the evaluation sets, `trial` merges in memory and
measures, `score` turns values into retentions, `study` and `pool` run the trials, `run`
drives them and `output` writes the results (`docs/search.md`)."""
