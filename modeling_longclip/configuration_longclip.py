"""Long-CLIP configuration: an OpenAI CLIP configuration with a stretched text position table.

Part of the flat Hub payload: imports only transformers.
"""

from transformers import CLIPConfig

from .transformers_compat import finish_post_init, portable_config

LONGCLIP_CONTEXT_LENGTH = 248
LONGCLIP_KEEP_POSITIONS = 20
LONGCLIP_AUTO_MAP = {
    "AutoConfig": "configuration_longclip.LongCLIPConfig",
    "AutoModel": "modeling_longclip.LongCLIPModel",
    "AutoModelForZeroShotImageClassification": "modeling_longclip.LongCLIPModel",
}


@portable_config
class LongCLIPConfig(CLIPConfig):
    r"""
    Configuration of a [`LongCLIPModel`]: a [`CLIPConfig`] (every CLIP tool reads it) whose text tower has Long-CLIP's
    248 positions, plus the Long-CLIP training settings. The defaults describe Long-CLIP-B/16's text side on CLIP's
    default towers.

    Args:
        text_config (`dict` or `CLIPTextConfig`, *optional*, defaults to `None`):
            The text tower; its `max_position_embeddings` defaults to 248 (Long-CLIP's context length).
        vision_config (`dict` or `CLIPVisionConfig`, *optional*, defaults to `None`):
            The image tower (CLIP's defaults: ViT-B/32 at 224 px).
        projection_dim (`int`, *optional*, defaults to 512):
            Size of the joint embedding (B: 512, L: 768).
        logit_scale_init_value (`float`, *optional*, defaults to 4.6052):
            Initial value of `logit_scale`: ln 100, as Long-CLIP initialises it (CLIP's default is ln(1 / 0.07)).
        initializer_factor (`float`, *optional*, defaults to 1.0):
            CLIP's factor on every initialisation standard deviation.
        keep_positions (`int`, *optional*, defaults to 20):
            Leading rows of the text position table that knowledge-preserving stretching copies verbatim and
            fine-tuning keeps frozen.
        pca_components (`int`, *optional*, defaults to 32):
            Components kept by primary component matching of the image features for the short-caption loss.
        label_smoothing (`float`, *optional*, defaults to 0.1):
            Label smoothing of both contrastive cross-entropies of the Long-CLIP loss.
        short_caption_loss_weight (`float`, *optional*, defaults to 1.0):
            Weight of the short-caption term (the authors used 0.1 before May 2024, 1.0 since).

    Example:

    ```python
    >>> from transformers import CLIPConfig, CLIPModel
    >>> from modeling_longclip import LongCLIPConfig, LongCLIPModel

    >>> LongCLIPConfig().text_config.max_position_embeddings  # CLIP's default towers, a 248-position text table
    248

    >>> # stretch any CLIP (object, folder or Hub id): 77 positions -> 20 + 57 * 4 = 248
    >>> tower = {"hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 2, "num_hidden_layers": 2}
    >>> clip = CLIPModel(CLIPConfig(text_config=tower, vision_config=tower, projection_dim=32))
    >>> model = LongCLIPModel.from_clip(clip)
    >>> model.text_model.embeddings.position_embedding.num_embeddings, model.config.keep_positions
    (248, 20)
    ```
    """

    model_type = "longclip"

    keep_positions: int = LONGCLIP_KEEP_POSITIONS
    pca_components: int = 32
    label_smoothing: float = 0.1
    short_caption_loss_weight: float = 1.0
    logit_scale_init_value: float | int | None = 4.6052

    def __post_init__(self, **kwargs):
        # Every saved folder loads through remote code with the generic and the zero-shot auto classes.
        self.auto_map = {**LONGCLIP_AUTO_MAP, **(getattr(self, "auto_map", None) or {})}
        if self.text_config is None:
            self.text_config = {"max_position_embeddings": LONGCLIP_CONTEXT_LENGTH}
        elif isinstance(self.text_config, dict):
            self.text_config.setdefault("max_position_embeddings", LONGCLIP_CONTEXT_LENGTH)
        finish_post_init(super(), kwargs)
        context_length = self.text_config.max_position_embeddings
        if not 0 <= self.keep_positions <= context_length:
            raise ValueError(
                f"keep_positions={self.keep_positions} must lie in [0, {context_length}] "
                f"(the text tower has {context_length} positions)."
            )
        if self.pca_components < 1:
            raise ValueError(f"pca_components must be positive, got {self.pca_components}.")


__all__ = ["LongCLIPConfig"]
