def test_predict_jsonl_with_weights_file(cli, images, random_weights):
    r = cli("predict", *images, "-m", "x0_5", "--weights", random_weights, "-f", "jsonl", "-k", "3")
    assert r.exit_code == 0, r.stderr
    recs = r.jsonl()
    assert [rec["path"] for rec in recs] == [str(p) for p in images]
    assert all(len(rec["predictions"]) == 3 for rec in recs)
