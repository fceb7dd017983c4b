# Tokenizer, streaming detokenizer and chat template.
glm4v_add_test(test_tokenizer SOURCES test_tokenizer.c test_tokenizer_stream.c
  LIBS glm4v_coordinator LABELS coordinator tokenizer)

# Against the npm tiktoken package (scripts/install-tiktoken.sh installs it; without it the test
# fails and says so). The driver generates the corpus and tiktoken's ids, then runs the program.
add_executable(test_tokenizer_tiktoken test_tokenizer_tiktoken.c)
target_link_libraries(test_tokenizer_tiktoken PRIVATE glm4v_testutil glm4v_coordinator)
add_test(NAME test_tokenizer_tiktoken
  COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/tiktoken/run_test.sh
          $<TARGET_FILE:test_tokenizer_tiktoken> ${CMAKE_CURRENT_BINARY_DIR}/tiktoken)
set_tests_properties(test_tokenizer_tiktoken PROPERTIES TIMEOUT 120 LABELS "coordinator;tokenizer")
