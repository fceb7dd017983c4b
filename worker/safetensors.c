/* safetensors: not written yet */
