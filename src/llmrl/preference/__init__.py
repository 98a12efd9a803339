"""The preference trainers: offline DPO family, online / ONPO, reward models (pairing, distillation,
personalisation, label privacy) and MPO policy mixing."""
