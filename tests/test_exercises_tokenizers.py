"""Grading tests of lesson 05: 05.1 merging a pair inside one word, 05.2 the BPE merge loop with
incremental pair counts, 05.3 WordPiece's greedy longest match.

The references are written apart from the package: a merge by string replacement, a trainer
that recounts every pair before each merge, and a recursive longest-match split.
"""

from collections import Counter

import pytest
from exercise_asserts import assert_equal

from tinyllm.tokenizers import merge_word, train_bpe, wordpiece_split
from tinyllm.tokenizers.bpe import bpe_merge_loop, pretokenize


def ref_merge(word, pair, new_id):
    """str.replace works left to right without overlaps, like BPE's merge."""
    enc = lambda ids: "".join(chr(0x1000 + i) for i in ids)
    return tuple(ord(c) - 0x1000 for c in enc(word).replace(enc(pair), enc([new_id])))


def naive_train(words, freqs, num_merges, first_id=256):
    """Recount all pairs before every merge; ties go to the smallest pair."""
    words = [tuple(w) for w in words]
    merges = []
    for k in range(num_merges):
        counts = Counter()
        for w, f in zip(words, freqs):
            for p in zip(w, w[1:]):
                counts[p] += f
        if not counts:
            break
        top = max(counts.values())
        pair = min(p for p, c in counts.items() if c == top)
        merges.append(pair)
        words = [ref_merge(w, pair, first_id + k) for w in words]
    return merges, words


# ---------------------------------------------------------------------- 05.1 merge_word
@pytest.mark.exercise("05.1")
def test_05_1_merge_word_fixed():
    for word, pair, new, want in [((1, 2, 2, 2), (2, 2), 9, (1, 9, 2)),
                                  ((2, 2, 2, 2), (2, 2), 9, (9, 9)),
                                  ((1, 2, 3, 1, 2), (1, 2), 7, (7, 3, 7)),
                                  ((3, 1, 2), (1, 2), 7, (3, 7)), ((5,), (5, 5), 7, (5,)),
                                  ((), (1, 2), 7, ()), ((1, 2), (2, 1), 7, (1, 2))]:
        assert_equal(f"merge_word({word}, {pair}, {new})", merge_word(word, pair, new), want)


@pytest.mark.exercise("05.1")
def test_05_1_merge_word_random(rng):
    for _ in range(300):
        word = tuple(rng.integers(0, 4, size=int(rng.integers(0, 15))).tolist())
        pair = tuple(rng.integers(0, 4, size=2).tolist())
        new_id = int(rng.integers(10, 100))
        assert_equal(f"merge_word({word}, {pair}, {new_id})", merge_word(word, pair, new_id),
                     ref_merge(word, pair, new_id), rng)


# ---------------------------------------------------------------------- 05.2 bpe_merge_loop
@pytest.mark.exercise("05.2")
def test_05_2_merge_loop_wikipedia_example():
    # "aaabdaaabac": aa -> Z(256), ab -> Y(257), ZY -> X(258)  (ties go to the smallest pair)
    words = [tuple(b"aaabdaaabac")]
    assert_equal("bpe_merge_loop on 'aaabdaaabac', 3 merges", bpe_merge_loop(words, [1], 3),
                 [(97, 97), (97, 98), (256, 257)])
    assert_equal("the word after the 3 merges", words[0], (258, 100, 258, 97, 99))
    assert_equal("bpe_merge_loop on 'ab' asked for 5 merges (stops when no pair is left)",
                 bpe_merge_loop([tuple(b"ab")], [1], 5), [(97, 98)])


@pytest.mark.exercise("05.2")
def test_05_2_merge_loop_matches_full_recount(rng):
    for _ in range(25):
        n = int(rng.integers(1, 30))
        words = [tuple(rng.integers(0, 5, size=int(rng.integers(1, 12))).tolist())
                 for _ in range(n)]
        words = list(dict.fromkeys(words))
        freqs = rng.integers(1, 20, size=len(words)).tolist()
        num = int(rng.integers(1, 30))
        first = int(rng.choice([256, 1000]))
        expected, merged = naive_train(words, freqs, num, first)
        got_words = list(words)
        what = f"bpe_merge_loop of {len(words)} words (frequencies {freqs}), {num} merges"
        assert_equal(f"{what}: the merges", bpe_merge_loop(got_words, freqs, num, first),
                     expected, rng)
        assert_equal(f"{what}: the words, rewritten in place", got_words, merged, rng)


@pytest.mark.exercise("05.2")
def test_05_2_train_bpe_on_text_matches_naive(rng):
    letters = list("abcde ")
    text = "".join(rng.choice(letters, size=3000, p=[0.3, 0.2, 0.2, 0.1, 0.05, 0.15]))
    counter = Counter(pretokenize(text))
    words = [tuple(w.encode()) for w in counter]
    expected, _ = naive_train(words, list(counter.values()), 30)
    assert_equal("train_bpe of a random text, 30 merges", train_bpe(text, 256 + 30), expected,
                 rng)


# ---------------------------------------------------------------------- 05.3 wordpiece_split
VOCAB = {"un", "##aff", "##able", "a", "##a", "##b", "b", "ab", "##ab", "##abc"}


@pytest.mark.exercise("05.3")
def test_05_3_wordpiece_split_fixed_examples():
    for args, kw, want in [(("unaffable", VOCAB), {}, ["un", "##aff", "##able"]),
                           (("unx", VOCAB), {}, ["[UNK]"]), (("abab", VOCAB), {}, ["ab", "##ab"]),
                           (("a" * 101, {"a", "##a"}), {}, ["[UNK]"]),
                           (("a" * 100, {"a", "##a"}), {}, ["a"] + ["##a"] * 99),
                           (("ab", VOCAB), {"max_input_chars_per_word": 1}, ["[UNK]"]),
                           (("ab", VOCAB), {"max_input_chars_per_word": 2}, ["ab"]),
                           (("ab", {"a", "@@b"}), {"prefix": "@@"}, ["a", "@@b"]),
                           (("ax", VOCAB), {"unk_token": "<unk>"}, ["<unk>"]),
                           (("ax", {"a", "##"}), {}, ["[UNK]"])]:  # no empty piece
        assert_equal(f"wordpiece_split({args[0][:12]!r}{'...' if len(args[0]) > 12 else ''}, "
                     f"{kw or 'defaults'})", wordpiece_split(*args, **kw), want)


def reference_split(word, vocab, max_chars=100):
    """Try every split length from the longest, piece by piece."""
    if len(word) > max_chars:
        return ["[UNK]"]
    out, rest, first = [], word, True
    while rest:
        for k in range(len(rest), 0, -1):
            piece = rest[:k] if first else "##" + rest[:k]
            if piece in vocab:
                out.append(piece)
                rest, first = rest[k:], False
                break
        else:
            return ["[UNK]"]
    return out


@pytest.mark.exercise("05.3")
def test_05_3_wordpiece_split_random(rng):
    alphabet = list("abcd")
    for _ in range(200):
        vocab = set()
        for _ in range(int(rng.integers(3, 25))):
            s = "".join(rng.choice(alphabet, size=int(rng.integers(1, 4))))
            vocab.add(s if rng.random() < 0.5 else "##" + s)
        word = "".join(rng.choice(alphabet, size=int(rng.integers(1, 12))))
        max_chars = int(rng.integers(5, 15))
        assert_equal(f"wordpiece_split({word!r}, vocab {sorted(vocab)}, "
                     f"max_input_chars_per_word={max_chars})",
                     wordpiece_split(word, vocab, max_input_chars_per_word=max_chars),
                     reference_split(word, vocab, max_chars), rng)
