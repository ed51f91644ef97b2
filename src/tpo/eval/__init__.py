"""Evaluation: how good each model is, and whether thinking helps, measured as the paper does.

heldout.py     the eval stage: every model answers the held-out split; eval.json
metrics.py     mean score, pass rate, win rate against the seed, lengths, standard errors
outputs.py     a model's responses to any instruction set (held-out, or generated)
winrate.py     comparisons judged in both orders (Comparer), win rate and its error
lc.py          AlpacaEval 2's length-controlled win rate
categories.py  per-category win rates; an LLM classifier of the paper's 20 categories
compare.py     tpo against direct at one iteration; a model against reference outputs
math_eval.py   GSM8K-format accuracy, answer only
export.py      AlpacaEval and Arena-Hard files for the official evaluators
tracking.py    TensorBoard / W&B mirrors of the results rows
results.py     the arm x iteration results rows, table and CSV
suite.py       what `tpo run` does after the loop, and `tpo eval`'s options
"""
