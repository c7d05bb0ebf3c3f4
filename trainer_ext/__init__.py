from .opus_config import OPUSConfig as OPUSConfig
from .opus_trainer import OPUSTrainer as OPUSTrainer
