"""Shared-memory slots between decode processes and the main process."""

from __future__ import annotations

import multiprocessing

import numpy as np
import pytest

from shufflenet_cli.decode import crop_slots
from shufflenet_cli.decode.crop_slots import CropSlots

SHAPE = (6, 5, 3)


def _child_writes(name: str, count: int, slot: int, value: int) -> bool:
    crop_slots.attach(name, count, SHAPE)
    return crop_slots.put(slot, np.full(SHAPE, value, np.uint8)) and not crop_slots.put(
        slot, np.zeros((2, 2, 3), np.uint8)
    )


def test_a_worker_process_writes_and_the_main_process_reads():
    slots = CropSlots(4, SHAPE)
    try:
        ids = slots.take(3)
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(1) as pool:
            assert pool.apply(_child_writes, (slots.name, 4, ids[1], 77))
        got = slots.read(ids[1])
        assert got.shape == SHAPE and (got == 77).all()
        got[:] = 0  # a copy: the slot can be reused at once
        assert (slots.read(ids[1]) == 77).all()
        slots.release(ids)
        assert sorted(slots.take(4)) == [0, 1, 2, 3]
        with pytest.raises(RuntimeError):
            slots.take(1)
    finally:
        slots.close()


def test_close_unlinks_the_block():
    from multiprocessing import shared_memory

    slots = CropSlots(2, SHAPE)
    name = slots.name
    slots.close()
    with pytest.raises(FileNotFoundError):
        shared_memory.SharedMemory(name=name)


def test_decode_many_puts_crops_in_their_slots(tmp_path):
    """The worker side, run in this process: crops go into the slots, errors stay records."""
    from conftest import make_image

    from shufflenet_cli.decode.preprocess import Preprocess
    from shufflenet_cli.decode.workers import decode_many, decode_one
    from shufflenet_cli.inputs.paths import Input
    from shufflenet_cli.models import resolve_model

    prep = Preprocess.from_spec(resolve_model("x0_5"))
    items = [Input(str(make_image(tmp_path / f"{i}.jpg", size=(90, 70), seed=i))) for i in range(2)]
    items.insert(1, Input(str(tmp_path / "missing.jpg")))
    slots = CropSlots(4, (prep.crop, prep.crop, 3))
    try:
        crop_slots.attach(slots.name, slots.count, slots.shape)
        ids = slots.take(3)
        out = decode_many(prep, items, ids)
        assert [d.slot for d in out] == [ids[0], None, ids[2]]
        assert out[0].array is None and out[1].error and out[2].array is None
        np.testing.assert_array_equal(slots.read(ids[2]), decode_one(prep, items[2]).array)
    finally:
        crop_slots._worker_view = None
        crop_slots._worker_shm.close()
        slots.close()
