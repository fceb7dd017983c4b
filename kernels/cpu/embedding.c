/* embedding: not written yet */
