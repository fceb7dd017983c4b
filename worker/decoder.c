/* decoder: not written yet */
