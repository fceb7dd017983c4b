/* weights: not written yet */
