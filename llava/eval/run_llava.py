"""Answer one question about one (or more) images, as LLaVA's `llava.eval.run_llava`.

    python -m llava.eval.run_llava --model-path MODEL [--model-base BASE] \\
        --image-file img.png --query "What is shown?" [--conv-mode vicuna_v1]

Prints the answer on stdout; a loading problem exits with status 2 and one message.
"""

from __future__ import annotations

import argparse
import logging
import sys

import torch

from llava.constants import (
    DEFAULT_IM_END_TOKEN,
    DEFAULT_IM_START_TOKEN,
    DEFAULT_IMAGE_TOKEN,
    IMAGE_PLACEHOLDER,
    IMAGE_TOKEN_INDEX,
)
from llava.conversation import conv_templates
from llava.eval.runner import GenerationSettings, generate_answers
from llava.mm_utils import get_model_name_from_path, load_image, process_images, tokenizer_image_token
from llava.model.builder import load_pretrained_model
from llava.model.errors import LlavaLoadError
from robustmerge.errors import cli_main

logger = logging.getLogger(__name__)


def build_user_turn(query: str, has_image: bool, use_im_start_end: bool) -> str:
    """The user message: the image token replaces `<image-placeholder>` or goes first."""
    if not has_image:
        return query
    token = DEFAULT_IMAGE_TOKEN
    if use_im_start_end:
        token = DEFAULT_IM_START_TOKEN + DEFAULT_IMAGE_TOKEN + DEFAULT_IM_END_TOKEN
    if IMAGE_PLACEHOLDER in query:
        return query.replace(IMAGE_PLACEHOLDER, token)
    return f"{token}\n{query}"


def eval_model(args: argparse.Namespace) -> str:
    """Load the model named by `args`, answer `args.query`; returns the answer text."""
    settings = GenerationSettings(conv_mode=args.conv_mode, temperature=args.temperature, top_p=args.top_p,
                                  num_beams=args.num_beams, max_new_tokens=args.max_new_tokens)  # checks the flags
    tokenizer, model, image_processor, _ = load_pretrained_model(
        args.model_path,
        args.model_base,
        get_model_name_from_path(args.model_path),
        device=args.device,
        dtype=args.dtype,
        vision_tower_path=args.vision_tower,
    )
    files = [f for f in (args.image_file or "").split(args.sep) if f]
    conv = conv_templates[args.conv_mode].copy()
    conv.append_message(conv.roles[0], build_user_turn(args.query, bool(files), model.config.mm_use_im_start_end))
    conv.append_message(conv.roles[1], None)
    input_ids = tokenizer_image_token(conv.get_prompt(), tokenizer, IMAGE_TOKEN_INDEX, return_tensors="pt")
    images = [load_image(f) for f in files]
    pixels = None
    if images:
        pixels = process_images(images, image_processor, model.config).to(model.device, dtype=model.dtype)
    sizes = [img.size for img in images]
    return generate_answers(model, tokenizer, input_ids.unsqueeze(0), pixels, sizes, settings)[0]  # input [1, L]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m llava.eval.run_llava", description=__doc__.split("\n")[0])
    parser.add_argument("--model-path", required=True)
    parser.add_argument("--model-base", default=None)
    parser.add_argument("--image-file", default=None, help="image path(s), separated by --sep")
    parser.add_argument("--query", required=True)
    parser.add_argument("--conv-mode", default="vicuna_v1", choices=sorted(conv_templates))
    parser.add_argument("--sep", default=",")
    parser.add_argument("--temperature", type=float, default=0.2)
    parser.add_argument("--top_p", "--top-p", dest="top_p", type=float, default=None)
    parser.add_argument("--num_beams", "--num-beams", dest="num_beams", type=int, default=1)
    parser.add_argument("--max_new_tokens", "--max-new-tokens", dest="max_new_tokens", type=int, default=512)
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto")
    parser.add_argument("--dtype", default=None, help="fp32, bf16 or fp16 (default: fp16 on CUDA, fp32 on CPU)")
    parser.add_argument("--vision-tower", default=None, help="local CLIP tower folder (overrides mm_vision_tower)")
    parser.add_argument("--seed", type=int, default=None, help="seed for sampled decoding")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.seed is not None:
        torch.manual_seed(args.seed)
    def run() -> None:
        try:
            answer = eval_model(args)
        except (FileNotFoundError, ValueError) as exc:  # an unreadable image or a bad flag value
            raise LlavaLoadError(str(exc)) from None
        print(answer)

    return cli_main(run)


if __name__ == "__main__":
    sys.exit(main())
