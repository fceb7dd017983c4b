/* checkpoint: not written yet */
