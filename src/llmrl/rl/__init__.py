"""The RL trainers: the policy-gradient loop (GRPO, RLOO, REINFORCE++, PPO...), its reward pipeline,
the critic, and DVPO."""
