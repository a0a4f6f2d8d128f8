# rw_add_function: builds a C function as a Lambda `bootstrap`, where a
# template's CodeUri finds it.
#
#   rw_add_function(TARGET CODEURI <dir> SOURCES src... [LIBS lib...])
#
# CODEURI is the function's source directory relative to the source tree (the
# directory a template's `CodeUri` names, e.g. functions/samples/test). The
# executable is built as ${CMAKE_BINARY_DIR}/<CODEURI>/bootstrap, linked with
# the runtime client (reelway_runtime) and LIBS. `reelway serve` runs it for a
# function whose CodeUri is that directory: when the source directory holds no
# executable bootstrap, the same relative path under --functions-dir (default:
# the build tree) is used (gateway/app.c, resolve_code_path).
function(rw_add_function target)
  cmake_parse_arguments(F "" "CODEURI" "SOURCES;LIBS" ${ARGN})
  if(F_UNPARSED_ARGUMENTS)
    message(FATAL_ERROR "rw_add_function(${target}): unknown arguments ${F_UNPARSED_ARGUMENTS}")
  endif()
  if(NOT F_CODEURI OR NOT F_SOURCES)
    message(FATAL_ERROR "rw_add_function(${target}): CODEURI and SOURCES are required")
  endif()
  if(IS_ABSOLUTE "${F_CODEURI}" OR F_CODEURI MATCHES "(^|/)\\.\\.(/|$)")
    message(FATAL_ERROR "rw_add_function(${target}): CODEURI '${F_CODEURI}' must be a directory "
                        "inside the source tree, relative to it")
  endif()
  if(NOT IS_DIRECTORY "${PROJECT_SOURCE_DIR}/${F_CODEURI}")
    message(FATAL_ERROR "rw_add_function(${target}): ${PROJECT_SOURCE_DIR}/${F_CODEURI} is not a "
                        "directory")
  endif()
  # A bootstrap in the source directory would win over the built one.
  if(EXISTS "${PROJECT_SOURCE_DIR}/${F_CODEURI}/bootstrap")
    message(WARNING "rw_add_function(${target}): ${F_CODEURI}/bootstrap exists in the source "
                    "tree; a template's CodeUri will run that one, not ${target}")
  endif()
  add_executable(${target} ${F_SOURCES})
  target_link_libraries(${target} PRIVATE reelway_runtime ${F_LIBS})
  # The "$<0:>" keeps multi-config generators from adding a per-configuration
  # subdirectory: the path must be exactly the CodeUri's.
  set_target_properties(${target} PROPERTIES
    OUTPUT_NAME bootstrap
    RUNTIME_OUTPUT_DIRECTORY "${CMAKE_BINARY_DIR}/${F_CODEURI}$<0:>")
endfunction()
