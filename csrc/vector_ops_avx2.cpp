// The vector kernels built with this file's ISA flags (see CMakeLists.txt).
#include "vector_ops_impl.h"

namespace kt {
const VectorOps& vector_ops_avx2() { return kOps; }
}  // namespace kt
