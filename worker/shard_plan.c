/* shard_plan: not written yet */
