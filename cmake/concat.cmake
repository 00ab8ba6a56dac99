# cmake -DOUTPUT=file -DINPUTS="a;b;c" -P concat.cmake
# Joins the cdef files into the single declaration file cffi.gen_src reads.
file(WRITE "${OUTPUT}.tmp" "")
foreach(_in IN LISTS INPUTS)
    file(READ "${_in}" _text)
    file(APPEND "${OUTPUT}.tmp" "/* ---- ${_in} ---- */\n${_text}\n")
endforeach()
file(RENAME "${OUTPUT}.tmp" "${OUTPUT}")
