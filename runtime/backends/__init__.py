"""Where the classifier runs: session creation (sessions.py) and the perturbation batch each device backend
provides (cpu.py; a CUDA backend with IO binding is a later issue)."""
