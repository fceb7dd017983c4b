/* replaced by generated glm4v.pb-c.c */
