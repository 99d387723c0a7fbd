"""The machinery beneath the S5 lesson (utils.py): one topic per module. Nothing here imports utils or the
scripts; utils.py re-exports what a learner uses."""
