/* kv_cache: not written yet */
