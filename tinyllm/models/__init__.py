"""``tinyllm.models``: complete models built from ``tinyllm.nn``, and text generation.

Every public model class is exported here. One import line per module (re-exports; add yours
below).
"""

# ruff: noqa: F401
from tinyllm.models.bert import (
    BertConfig,
    BertEmbeddings,
    BertForMaskedLM,
    BertForPreTraining,
    BertModel,
    BertPreTrainingOutput,
    MLMHead,
    roberta_config,
)
from tinyllm.models.bigram import BigramLM
from tinyllm.models.classification import (
    BertForSequenceClassification,
    GPTForSequenceClassification,
    SequenceClassifier,
    SequenceClassifierOutput,
)
from tinyllm.models.generation import (
    GenerationMixin,
    beam_search,
    generate,
    top_k_filter,
    top_p_filter,
)
from tinyllm.models.gpt import GPT, Block, CausalSelfAttention, GPTConfig
from tinyllm.models.hf_config import HFCheckpointError
from tinyllm.models.hub import PretrainedMixin
from tinyllm.models.llama import Llama, LlamaConfig
from tinyllm.models.mlp_lm import MLPLM
from tinyllm.models.model_driver import ModelDriver
from tinyllm.models.pooling import encode_sentences
from tinyllm.models.presets import PRESETS, preset_config
from tinyllm.models.transformer import (
    CrossAttention,
    DecoderLayerCache,
    Seq2SeqCache,
    Transformer,
    TransformerConfig,
)
