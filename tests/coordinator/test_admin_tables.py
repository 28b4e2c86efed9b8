"""``fedge admin``'s tables: columns aligned, numbers to the right, times in ISO 8601 UTC."""

from coordinator.admin_cli import iso_time, table


def test_a_table_aligns_text_left_and_numbers_right_under_its_headers():
    rows = [{"id": 3, "name": "digits", "loss": 0.123456}, {"id": 12, "name": "a", "loss": 2.0}]

    text = table(
        rows,
        [("ID", lambda r: r["id"]), ("NAME", lambda r: r["name"]), ("LOSS", lambda r: r["loss"])],
    )

    assert text.splitlines() == [
        "ID  NAME      LOSS",
        " 3  digits  0.1235",
        "12  a            2",
    ]


def test_missing_values_show_as_a_dash_and_counts_with_thousands_separators():
    text = table(
        [{"n": 1234567, "round": None}], [("N", lambda r: r["n"]), ("ROUND", lambda r: r["round"])]
    )

    assert text.splitlines()[1].split() == ["1,234,567", "-"]


def test_times_are_iso_8601_in_utc_to_the_second():
    assert iso_time(0.0) == "1970-01-01T00:00:00Z"
    assert iso_time(1_796_280_000.7) == "2026-12-03T06:40:00Z"
    assert iso_time(None) == "-"
