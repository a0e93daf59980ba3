"""The allocator benchmark: one real worker (glibc, the sslx side, tiny), the summary's ratios,
and the one-line error for a missing allocator library."""

import pytest

from tests.benchmarks import load_benchmark


def test_a_glibc_worker_times_the_sslx_step_and_counts_its_faults(capsys):
  bench = load_benchmark("allocator")
  rows = bench.main(["--sides", "sslx", "--allocators", "glibc", "--rounds", "1", "--steps", "2",
                     "--batch_size", "4"])
  [row] = rows
  assert (row["model"], row["side"], row["allocator"], row["failed"]) == ("convnet", "sslx", "glibc", 0)
  assert row["images_per_s"] > 0 and row["minor_faults_per_step"] >= 0 and row["peak_rss_mb"] > 100
  assert 0 <= row["system_share"] <= 1 and row["vs_glibc"] == 1.0
  out = capsys.readouterr().out
  assert "round 1 convnet sslx glibc: " in out and "| convnet | sslx | glibc | " in out


def test_summary_pairs_each_round_with_glibcs_and_reports_failures():
  bench = load_benchmark("allocator")
  common = dict(model="convnet", side="sslx", minor_faults_per_step=0, system_s_per_step=0.0,
                user_s_per_step=1.0, system_share=0.0, peak_rss_mb=1000.0)
  results = [dict(common, allocator="glibc", round=0, images_per_s=50.0),
             dict(common, allocator="tcmalloc", round=0, images_per_s=75.0),
             dict(common, allocator="glibc", round=1, images_per_s=40.0),
             dict(common, allocator="tcmalloc", round=1, images_per_s=52.0),
             dict(model="convnet", side="sslx", allocator="jemalloc", round=0, failed="exit -9: killed")]
  rows = {r["allocator"]: r for r in bench.summarise(results, ["glibc", "jemalloc", "tcmalloc"])}
  assert rows["tcmalloc"]["vs_glibc"] == pytest.approx((1.5 + 1.3) / 2)  # Per round, then the median.
  assert rows["glibc"]["vs_glibc"] == 1.0
  assert rows["jemalloc"]["failed"] == 1 and "images_per_s" not in rows["jemalloc"]
  assert "failed (1 of 1)" in bench.format_table(list(rows.values()))


def test_a_missing_allocator_library_is_named_with_its_package(monkeypatch):
  bench = load_benchmark("allocator")
  monkeypatch.setattr(bench, "LIBRARY_DIRS", ())
  with pytest.raises(SystemExit, match="apt-get install libtcmalloc-minimal4"):
    bench.main(["--allocators", "tcmalloc", "--sides", "sslx"])
