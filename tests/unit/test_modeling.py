"""The offline tiny model's vocabulary: deterministic and character-level."""

from lawclf.modeling import SPECIAL_TOKENS, character_vocab, train_wordpiece_tokenizer

TEXTS = ["朋友问我借钱，要不要借？", "公司拖欠工资三个月怎么起诉", "Hello world, 借钱不还怎么办", "请问去机场怎么走"] * 3


def test_vocabulary_is_identical_across_builds():
    # The WordPiece trainer's ties follow hash order; ours must not (resume and DDP rely on it).
    assert character_vocab(TEXTS, 200) == character_vocab(list(reversed(TEXTS)), 200)
    a, b = train_wordpiece_tokenizer(TEXTS, 200), train_wordpiece_tokenizer(TEXTS, 200)
    assert a.get_vocab() == b.get_vocab()


def test_vocabulary_specials_first_then_by_frequency_and_capped():
    vocab = character_vocab(TEXTS, vocab_size=12)
    assert list(vocab)[: len(SPECIAL_TOKENS)] == SPECIAL_TOKENS
    assert len(vocab) == 12
    assert "怎" in vocab  # among the most frequent characters


def test_chinese_is_one_token_per_character_and_latin_is_spelt():
    tok = train_wordpiece_tokenizer(TEXTS, 500)
    assert tok.tokenize("借钱不还") == ["借", "钱", "不", "还"]
    assert tok.tokenize("hello") == ["h", "##e", "##l", "##l", "##o"]
    assert tok("借钱")["input_ids"][0] == tok.cls_token_id
