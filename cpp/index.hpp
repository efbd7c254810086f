// darcyvae: the one signed index type of the C++ core (sizes, counts, offsets
// of arrays). It is std::ptrdiff_t, the type of Eigen::Index (kle.hpp checks
// that the two agree) and of NumPy's intp on every platform darcyvae builds on.
#pragma once

#include <cstddef>

namespace darcyvae {

using Index = std::ptrdiff_t;

}  // namespace darcyvae
