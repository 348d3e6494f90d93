import numpy as np
import pytest

from trainables.selection import random_subset, select

IDS = np.arange(100, 300)  # ids need not start at 0
SCORES = np.linspace(0, 1, 200)[np.random.default_rng(0).permutation(200)]
LABELS = np.arange(200) % 4


@pytest.mark.parametrize("strategy", ["hard", "easy", "ccs"])
@pytest.mark.parametrize("fraction", [0.013, 0.1, 0.37, 0.5, 1.0])
def test_exact_count_sorted_unique_deterministic(strategy, fraction):
    kept = select(IDS, SCORES, LABELS, fraction, higher_is_harder=True, strategy=strategy, seed=3)
    assert len(kept) == round(fraction * 200)
    assert np.array_equal(kept, np.unique(kept)) and np.isin(kept, IDS).all()
    assert np.array_equal(kept, select(IDS, SCORES, LABELS, fraction, higher_is_harder=True, strategy=strategy, seed=3))


def test_hard_and_easy_take_the_ends_and_respect_orientation():
    hard = select(IDS, SCORES, LABELS, 0.1, higher_is_harder=True, strategy="hard")
    assert np.array_equal(hard, np.sort(IDS[np.argsort(SCORES)[-20:]]))
    easy = select(IDS, SCORES, LABELS, 0.1, higher_is_harder=True, strategy="easy")
    assert np.array_equal(easy, np.sort(IDS[np.argsort(SCORES)[:20]]))
    # a score where lower means harder flips which end is hard
    assert np.array_equal(select(IDS, SCORES, LABELS, 0.1, higher_is_harder=False, strategy="hard"), easy)


def test_orientation_is_never_guessed():
    with pytest.raises(TypeError, match="never guessed"):
        select(IDS, SCORES, LABELS, 0.1, higher_is_harder=None)


def test_class_balanced_keeps_f_of_every_class():
    labels = np.repeat([0, 1, 2], [120, 60, 20])
    kept = select(IDS, SCORES, labels, 0.25, higher_is_harder=True, class_balanced=True)
    kept_labels = labels[np.searchsorted(IDS, kept)]
    assert np.bincount(kept_labels).tolist() == [30, 15, 5]
    # and within each class the hardest
    for c in range(3):
        members = np.flatnonzero(labels == c)
        top = IDS[members[np.argsort(SCORES[members])[-np.bincount(kept_labels)[c]:]]]
        assert np.array_equal(np.sort(top), kept[kept_labels == c])


def test_ccs_drops_the_hardest_and_covers_the_score_range():
    scores = np.arange(1000) / 1000  # uniform scores: strata of equal size
    ids = np.arange(1000)
    kept = select(ids, scores, np.zeros(1000), 0.2, higher_is_harder=True, strategy="ccs", beta=0.1, strata=10, seed=0)
    assert len(kept) == 200
    assert scores[kept].max() < 0.9  # the hardest 10% are gone
    # every stratum of the remaining range [0, 0.9) contributes about equally
    counts = np.histogram(scores[kept], bins=10, range=(0, 0.9))[0]
    assert counts.min() >= 18 and counts.max() <= 22
    # 'hard' at the same f would take only the top of the range
    hard = select(ids, scores, np.zeros(1000), 0.2, higher_is_harder=True, strategy="hard")
    assert scores[hard].min() >= 0.8


def test_ccs_gives_small_strata_all_their_members():
    # a long-tailed score: few hard examples, many easy ones
    scores = np.concatenate([np.zeros(900), np.linspace(0.5, 1.0, 100)])
    kept = select(np.arange(1000), scores, np.zeros(1000), 0.3, higher_is_harder=True, strategy="ccs", beta=0.0, strata=10)
    assert len(kept) == 300
    assert (scores[kept] > 0).sum() == 100  # every tail example kept, the rest from the large easy bin


def test_ccs_when_f_exceeds_one_minus_beta():
    kept = select(IDS, SCORES, LABELS, 0.95, higher_is_harder=True, strategy="ccs", beta=0.1)
    assert len(kept) == 190


def test_ties_are_broken_by_the_seed_not_by_id_order():
    flat = np.zeros(200)
    a = select(IDS, flat, LABELS, 0.1, higher_is_harder=True, seed=0)
    b = select(IDS, flat, LABELS, 0.1, higher_is_harder=True, seed=1)
    assert not np.array_equal(a, b) and not np.array_equal(a, IDS[:20])


@pytest.mark.parametrize("fraction", [0.0, -0.5, 1.01])
def test_fraction_outside_0_1_is_rejected(fraction):
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        select(IDS, SCORES, LABELS, fraction, higher_is_harder=True)
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        random_subset(IDS, fraction, seed=0)


def test_other_bad_input():
    with pytest.raises(ValueError, match="strategy"):
        select(IDS, SCORES, LABELS, 0.5, higher_is_harder=True, strategy="middle")
    with pytest.raises(ValueError, match="same length"):
        select(IDS, SCORES[:-1], LABELS, 0.5, higher_is_harder=True)
    with pytest.raises(ValueError, match="finite"):
        select(IDS, np.where(SCORES > 0.5, np.nan, SCORES), LABELS, 0.5, higher_is_harder=True)
    with pytest.raises(ValueError, match="keeps no example"):
        select(IDS, SCORES, LABELS, 0.001, higher_is_harder=True)


def test_score_table_select_uses_its_orientation(digits, digits_split):
    from trainables.scorers import ScoreRequest
    from trainables.scores import compute_scores

    table = compute_scores(digits, digits_split, ScoreRequest("random", seed=1), device="cpu")
    kept = table.select(digits.y_train, 0.2, class_balanced=True)
    assert len(kept) == sum(round(0.2 * c) for c in np.bincount(digits.y_train[digits_split.train_ids]))
    assert np.isin(kept, digits_split.train_ids).all()
