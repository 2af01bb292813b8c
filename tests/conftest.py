import os

# Nothing in the test suite may reach the network or a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
# A developer's shell settings must not change what the tests see (trackers are opt-in by env).
for _name in ("SIA_TRACKERS", "SIA_MODEL_PRICES", "MLFLOW_TRACKING_URI", "WANDB_MODE", "WANDB_DIR"):
    os.environ.pop(_name, None)
