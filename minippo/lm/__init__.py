"""minippo.lm: PPO for language models (chapters 6-9).

A character-level tokenizer and a tiny causal GPT (``tokenizer``, ``model``) are the policy; the
rest of the package is being written (issue 5).
"""
from minippo.lm.tokenizer import CharTokenizer
from minippo.lm.model import GPT, GPTConfig, Generation, generate, response_logprobs, response_mask
from minippo.lm import tokenizer, model
