/* attention: not written yet */
