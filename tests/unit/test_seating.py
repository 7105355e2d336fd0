from __future__ import annotations

import pytest

from domain.seating import (
    ExplicitRow,
    Seat,
    TicketTier,
    explicit_layout,
    generate_layout,
    group_rows,
    parse_seat_id,
    row_label,
    seat_id,
)


def tier(name: str, capacity: int, price: int = 5000) -> TicketTier:
    return TicketTier(tier=name, price=price, currency="USD", capacity=capacity)


# -- row labels and seat ids --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("index", "label"),
    [
        (0, "A"),
        (1, "B"),
        (25, "Z"),
        (26, "AA"),
        (27, "AB"),
        (51, "AZ"),
        (52, "BA"),
        (701, "ZZ"),
        (702, "AAA"),
        (18_277, "ZZZ"),
    ],
)
def test_row_labels_are_bijective_base_26(index: int, label: str) -> None:
    assert row_label(index) == label


def test_row_labels_are_distinct_and_in_order() -> None:
    labels = [row_label(i) for i in range(800)]
    assert len(set(labels)) == len(labels)
    # Shorter labels first, then alphabetical: the spreadsheet-column order.
    assert labels == sorted(labels, key=lambda s: (len(s), s))


def test_a_negative_row_index_is_refused() -> None:
    with pytest.raises(ValueError):
        row_label(-1)


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        ("seat_A1", ("A", 1)),
        ("seat_AB12", ("AB", 12)),
        ("seat_ZZZ9999", ("ZZZ", 9999)),
    ],
)
def test_seat_ids_parse_back(value: str, parsed: tuple[str, int]) -> None:
    assert parse_seat_id(value) == parsed
    assert seat_id(*parsed) == value


@pytest.mark.parametrize(
    "value",
    [
        "seat_A0",
        "seat_A01",
        "seat_a1",
        "seat_AAAAA1",
        "seat_A10000",
        "A1",
        "seat_A",
        "seat_1",
        "seat_A1 ",
        "xseat_A1",
    ],
)
def test_malformed_seat_ids_do_not_parse(value: str) -> None:
    assert parse_seat_id(value) is None


# -- generated layouts --------------------------------------------------------------------------


def test_generate_layout_lays_tiers_out_in_order_each_on_fresh_rows() -> None:
    seats = generate_layout(
        [tier("VIP", 5), tier("GENERAL", 7), tier("STANDING", 2)], seats_per_row=4
    )

    assert [s.id for s in seats] == [
        "seat_A1",
        "seat_A2",
        "seat_A3",
        "seat_A4",
        "seat_B1",
        "seat_C1",
        "seat_C2",
        "seat_C3",
        "seat_C4",
        "seat_D1",
        "seat_D2",
        "seat_D3",
        "seat_E1",
        "seat_E2",
    ]
    assert [s.tier for s in seats] == ["VIP"] * 5 + ["GENERAL"] * 7 + ["STANDING"] * 2
    assert [s.position for s in seats] == list(range(14))
    # Rows never mix tiers.
    tiers_of_row: dict[str, set[str]] = {}
    for s in seats:
        tiers_of_row.setdefault(s.row, set()).add(s.tier)
    assert all(len(t) == 1 for t in tiers_of_row.values())


def test_generate_layout_respects_seats_per_row_and_numbers_from_one() -> None:
    seats = generate_layout([tier("GENERAL", 1_000)], seats_per_row=20)
    assert len(seats) == 1_000
    by_row = group_rows(seats)
    assert len(by_row) == 50
    for _row, _tier, row_seats in by_row:
        assert [s.number for s in row_seats] == list(range(1, 21))
    assert by_row[-1][0] == "AX"  # the 50th row


def test_generated_seat_ids_parse_back_to_their_row_and_number() -> None:
    seats = generate_layout([tier("GENERAL", 30 * 12), tier("VIP", 12)], seats_per_row=12)
    assert len({s.id for s in seats}) == len(seats)
    for s in seats:
        assert parse_seat_id(s.id) == (s.row, s.number)
    assert seats[-1] == Seat(id="seat_AE12", row="AE", number=12, tier="VIP", position=371)
    assert parse_seat_id("seat_AB12") == ("AB", 12)
    assert any(s.id == "seat_AB12" for s in seats)


def test_generate_layout_of_a_zero_capacity_tier_adds_no_rows() -> None:
    seats = generate_layout([tier("VIP", 0), tier("GENERAL", 2)], seats_per_row=10)
    assert [(s.id, s.tier) for s in seats] == [("seat_A1", "GENERAL"), ("seat_A2", "GENERAL")]


# -- explicit layouts ---------------------------------------------------------------------------


def test_explicit_layout_keeps_the_given_rows_in_order() -> None:
    seats = explicit_layout(
        [ExplicitRow("C", "VIP", 2), ExplicitRow("A", "GENERAL", 3), ExplicitRow("B", "VIP", 1)],
        [tier("GENERAL", 3), tier("VIP", 3)],
    )
    assert [(s.id, s.tier, s.position) for s in seats] == [
        ("seat_C1", "VIP", 0),
        ("seat_C2", "VIP", 1),
        ("seat_A1", "GENERAL", 2),
        ("seat_A2", "GENERAL", 3),
        ("seat_A3", "GENERAL", 4),
        ("seat_B1", "VIP", 5),
    ]


def test_explicit_layout_refuses_a_duplicate_row() -> None:
    with pytest.raises(ValueError, match="row A appears twice"):
        explicit_layout(
            [ExplicitRow("A", "GENERAL", 2), ExplicitRow("A", "GENERAL", 2)], [tier("GENERAL", 4)]
        )


def test_explicit_layout_refuses_an_unknown_tier() -> None:
    with pytest.raises(ValueError, match="row B uses tier VIP"):
        explicit_layout(
            [ExplicitRow("A", "GENERAL", 2), ExplicitRow("B", "VIP", 2)], [tier("GENERAL", 2)]
        )


@pytest.mark.parametrize("capacity", [3, 5])
def test_explicit_layout_refuses_a_capacity_mismatch(capacity: int) -> None:
    with pytest.raises(
        ValueError, match=f"tier GENERAL has capacity {capacity} but the seatMap gives it 4 seats"
    ):
        explicit_layout(
            [ExplicitRow("A", "GENERAL", 2), ExplicitRow("B", "GENERAL", 2)],
            [tier("GENERAL", capacity)],
        )


def test_explicit_layout_refuses_a_tier_with_no_rows() -> None:
    with pytest.raises(
        ValueError, match="tier VIP has capacity 2 but the seatMap gives it 0 seats"
    ):
        explicit_layout([ExplicitRow("A", "GENERAL", 2)], [tier("GENERAL", 2), tier("VIP", 2)])


# -- grouping -----------------------------------------------------------------------------------


def test_group_rows_groups_consecutive_seats_by_row_with_their_tier() -> None:
    seats = generate_layout([tier("VIP", 3), tier("GENERAL", 4)], seats_per_row=2)
    rows = group_rows(seats)
    assert [(row, t, [s.number for s in row_seats]) for row, t, row_seats in rows] == [
        ("A", "VIP", [1, 2]),
        ("B", "VIP", [1]),
        ("C", "GENERAL", [1, 2]),
        ("D", "GENERAL", [1, 2]),
    ]
    assert [s for _, _, row_seats in rows for s in row_seats] == seats


def test_group_rows_of_no_seats_is_empty() -> None:
    assert group_rows([]) == []
