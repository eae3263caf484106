"""What one execution did, for people: a self-contained HTML report, live progress, a console.

- `analysis`: pure functions over run data (leaderboard order, best-so-far, timeline folding,
  training curves, confusion matrix); no AWS and no matplotlib, so they are unit-tested alone.
- `records`: reading the run records (`runs/<execution>/*.json`) and job archives from S3.
- `collect`: everything a report shows, read from Step Functions, S3, SageMaker and Logs.
- `plots` and `render`: matplotlib PNGs (Agg) and the HTML around them.
- `build`: `build_report(...)` / `write_report(...)`, used by `mlops report` and the console.
- `progress`: one-line tuning/retrain progress for `mlops wait` and the console.

This package imports nothing heavy at import time: `mlops wait` uses `progress` without
paying for matplotlib.
"""
