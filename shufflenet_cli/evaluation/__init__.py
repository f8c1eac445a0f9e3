"""`shufflenet evaluate`: accuracy on labelled images, measured through `runner.predict` itself.

`labelled.py` finds the labelled inputs (a folder per class, or a CSV of `path,label` rows);
`metrics.py` counts records against their labels; `render.py` and `report.py` show the counts;
`run.py` ties them to the runner.
"""
