# Tokenizer (tiktoken BPE, PCRE2 pre-tokenization), streaming detokenizer and chat template.
list(APPEND GLM4V_COORDINATOR_SOURCES
  ${CMAKE_CURRENT_LIST_DIR}/tokenizer.c
  ${CMAKE_CURRENT_LIST_DIR}/tokenizer_encode.c
  ${CMAKE_CURRENT_LIST_DIR}/detokenizer.c
  ${CMAKE_CURRENT_LIST_DIR}/chat_template.c)
