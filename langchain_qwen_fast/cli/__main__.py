"""``python -m langchain_qwen_fast.cli``: the ``qwen-fast`` command without the installed script."""

from langchain_qwen_fast.cli import main

raise SystemExit(main())
