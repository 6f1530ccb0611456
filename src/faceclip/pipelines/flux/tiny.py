"""Tiny random FaceT5-FLUX components: the whole pipeline in about a second on a CPU, for tests and dry runs.

The images they produce are noise. The transformer has FLUX.1-dev's structure (double and single stream
blocks, guidance embedding, rotary positions) with one block of each; the VAE has FLUX's layout (8x, no quant
convolutions, a shift factor) at 8 channels; the encoder is the tiny FaceT5 config. The T5 tokenizer is built
in code (one token per character) because no T5 tokenizer model ships with any package.
"""

from __future__ import annotations

import string

import torch
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel

from faceclip.pipelines.flux.architectures import architecture_config

TINY_T5_SPECIALS = ("<pad>", "</s>", "<unk>")
"""T5's special tokens, at T5's ids (pad 0, end 1, unknown 2)."""


def build_tiny_t5_tokenizer():
    """A character-level T5-style tokenizer (pad 0, ``</s>`` 1, unknown 2; lower-cased letters, digits,
    punctuation and space): 72 ids, within the tiny T5's vocabulary of 128."""
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    characters = string.ascii_lowercase + string.digits + " .,;:!?'\"-()/&"
    vocab = {token: i for i, token in enumerate(TINY_T5_SPECIALS)}
    vocab.update({char: len(TINY_T5_SPECIALS) + i for i, char in enumerate(characters)})
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    backend.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )


def build_tiny_components(seed: int = 0) -> dict[str, object]:
    """Tiny random ``scheduler``, ``vae``, ``transformer``, ``faceclip_encoder`` and ``tokenizer_2``.

    Args:
        seed: seeds the random weights; the global RNG is left untouched.

    Returns:
        A dict to pass as ``FaceT5FluxPipeline(**components)``; models in eval mode, fp32, CPU.
    """
    from faceclip.models.facet5_encoder import create_facet5_encoder

    encoder = create_facet5_encoder("facet5-tiny", seed=seed)
    config = architecture_config("tiny_transformer")
    config.update(
        joint_attention_dim=encoder.text_encoder_2.config.d_model,
        pooled_projection_dim=encoder.text_encoder.config.hidden_size,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transformer = FluxTransformer2DModel.from_config(config).eval()
        vae = AutoencoderKL.from_config(architecture_config("tiny_vae")).eval()
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(architecture_config("flux_scheduler"))
    return {
        "scheduler": scheduler,
        "vae": vae,
        "transformer": transformer,
        "faceclip_encoder": encoder,
        "tokenizer_2": build_tiny_t5_tokenizer(),
    }
