import pandas as pd

from agemapper.report import evaluate


def test_planted_pairs_follow_the_drivers():
    planted = pd.DataFrame({"field": [1, 2, 3], "driver": ["shared", "family:swi", ""]})
    pairs = evaluate.planted_pairs(planted, ["T1_nonlinear", "swi"])
    got = set(zip(pairs.field, pairs.contrast, strict=True))
    assert got == {(1, "T1_nonlinear"), (1, "swi"), (2, "swi")}


def test_sensitivity_and_false_discovery_proportion():
    planted = pd.DataFrame({"field": [1, 2], "driver": ["shared", "family:swi"]})
    significant = pd.DataFrame(
        {
            "nidp": ["1-2.0", "2-2.0=1", "3-2.0", "2-2.0"],
            "contrast": ["swi", "swi", "swi", "T1_linear"],
        }
    )
    summary, pairs = evaluate.associations(significant, planted, ["T1_linear", "swi"])
    assert summary["planted_pairs"] == 3 and summary["planted_found"] == 2
    assert summary["false_rows"] == 2 and summary["false_discovery_proportion"] == 0.5


def test_discovery_and_replicated_summaries_in_the_report():
    planted = pd.DataFrame({"field": [1, 2], "driver": ["shared", "family:swi"]})
    significant = pd.DataFrame(
        {
            "nidp": ["1-2.0", "2-2.0=1", "3-2.0", "2-2.0"],
            "contrast": ["swi", "swi", "swi", "T1_linear"],
            "replicated": [True, False, False, False],
        }
    )
    summaries = evaluate.association_summaries(significant, planted, ["T1_linear", "swi"])
    assert summaries["discoveries"]["planted_found"] == 2
    assert summaries["replicated"]["planted_found"] == 1
    assert summaries["replicated"]["false_discovery_proportion"] == 0.0
    brain = pd.DataFrame(columns=evaluate.REPORT_COLUMNS)
    text = evaluate.report(brain, summaries)
    assert "(discoveries, test half A): 2/3" in text
    assert "(replicated in half B): 1/3" in text
