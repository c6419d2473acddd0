import gc

from otel_ebpf.service.runtime import GC_THRESHOLDS, tune_gc


def test_tune_gc_freezes_startup_objects_and_spaces_out_collections():
    before = gc.get_threshold()
    try:
        survivor = [object() for _ in range(10)]  # a long-lived container made before tuning
        tune_gc()
        assert gc.get_threshold() == GC_THRESHOLDS
        assert gc.get_freeze_count() > len(survivor)
        assert not any(survivor is obj for obj in gc.get_objects(generation=2))  # frozen: no longer walked
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_cycles_are_still_collected_after_tuning():
    before = gc.get_threshold()
    try:
        tune_gc()
        freed = []

        class Node:
            def __del__(self):
                freed.append(1)

        a, b = Node(), Node()
        a.other, b.other = b, a  # a cycle: only the collector frees it
        del a, b
        gc.collect()
        assert len(freed) == 2
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
