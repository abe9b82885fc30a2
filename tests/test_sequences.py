"""``GroupSequences``: the bookkeeping by which a consumer notices change messages the
channel layer dropped (pgobserve/sequences.py). Pure, no database."""

from pgobserve.sequences import GroupSequences

G, H = "pgobserve.t.all", "pgobserve.t.s3"


def test_the_first_message_sets_the_baseline():
    """Numbers sent before the consumer joined are not its loss."""
    seqs = GroupSequences()
    assert not seqs.arrived(G, "run1", 17)
    assert not seqs.arrived(G, "run1", 18)


def test_consecutive_numbers_miss_nothing():
    seqs = GroupSequences()
    assert not any(seqs.arrived(G, "run1", n) for n in range(1, 50))


def test_a_skipped_number_is_reported_once():
    seqs = GroupSequences()
    seqs.arrived(G, "run1", 1)
    assert seqs.arrived(G, "run1", 3)
    assert not seqs.arrived(G, "run1", 4)
    assert not seqs.announced(G, "run1", 4)  # the gap is not reported again


def test_groups_are_counted_apart():
    seqs = GroupSequences()
    seqs.arrived(G, "run1", 1)
    seqs.arrived(H, "run1", 7)
    assert not seqs.arrived(G, "run1", 2)
    assert seqs.arrived(H, "run1", 9)


def test_a_new_run_resets_the_count():
    """A restarted (or standby) listener counts from 1 again: no gap, no false alarm."""
    seqs = GroupSequences()
    seqs.arrived(G, "run1", 40)
    assert not seqs.arrived(G, "run2", 1)
    assert not seqs.arrived(G, "run2", 2)
    assert seqs.arrived(G, "run2", 4)


def test_an_announcement_past_the_last_number_reports_a_miss():
    """The group's last messages were dropped and nothing came after them."""
    seqs = GroupSequences()
    seqs.arrived(G, "run1", 5)
    assert seqs.announced(G, "run1", 7)
    assert not seqs.announced(G, "run1", 7)  # the second announcement: already counted
    assert not seqs.arrived(G, "run1", 8)


def test_an_announcement_of_the_last_number_or_less_misses_nothing():
    seqs = GroupSequences()
    seqs.arrived(G, "run1", 5)
    assert not seqs.announced(G, "run1", 5)
    assert not seqs.announced(G, "run1", 4)
    assert not seqs.arrived(G, "run1", 6)


def test_an_announcement_without_a_baseline_only_sets_it():
    seqs = GroupSequences()
    assert not seqs.announced(G, "run1", 12)
    assert not seqs.arrived(G, "run1", 13)
    assert seqs.announced(G, "run1", 15)


def test_an_announcement_of_another_run_only_sets_the_baseline():
    seqs = GroupSequences()
    seqs.arrived(G, "run1", 30)
    assert not seqs.announced(G, "run2", 3)
    assert not seqs.arrived(G, "run2", 4)


def test_forget_resets_the_group():
    """A consumer that left a group and joins it again starts a new baseline."""
    seqs = GroupSequences()
    seqs.arrived(G, "run1", 1)
    seqs.arrived(H, "run1", 1)
    seqs.forget(G)
    assert not seqs.arrived(G, "run1", 9)
    assert not seqs.announced(G, "run1", 9)
    seqs.forget(G)
    assert not seqs.announced(G, "run1", 20)  # without a baseline: only sets it
    assert seqs.arrived(H, "run1", 3)  # other groups keep their count
    seqs.forget("never-joined")  # no error
