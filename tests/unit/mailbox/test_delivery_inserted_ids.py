"""The group commit's multi-row INSERT … RETURNING gives each row its own id, in row order,
whether the batch's keys are distinct (one statement, matched by key) or not (row by row)."""

from __future__ import annotations

from sqlalchemy import Column, Integer, LargeBinary, MetaData, Table, create_engine, insert, select

from missive.mailbox.delivery import _inserted_ids

META = MetaData()
ROWS = Table("rows", META, Column("id", Integer, primary_key=True),
             Column("key", LargeBinary), Column("n", Integer))


def test_ids_follow_the_rows() -> None:
    engine = create_engine("sqlite://")
    META.create_all(engine)
    by_key = insert(ROWS).returning(ROWS.c.id, ROWS.c.key)
    ordered = insert(ROWS).returning(ROWS.c.id, sort_by_parameter_order=True)
    with engine.begin() as conn:
        conn.execute(insert(ROWS), [{"key": b"old", "n": -1}] * 3)  # ids do not start at 1
        for keys in ([b"c", b"a", b"b", b"e", b"d"], [b"x", b"x", b"y"], [b"z"]):
            rows: list[dict[str, object]] = [{"key": k, "n": n} for n, k in enumerate(keys)]
            ids = _inserted_ids(conn, by_key, ordered, rows, "key")
            assert len(set(ids)) == len(rows)
            for row, row_id in zip(rows, ids, strict=True):
                got = conn.execute(select(ROWS.c.key, ROWS.c.n).where(ROWS.c.id == row_id)).one()
                assert (got.key, got.n) == (row["key"], row["n"])
