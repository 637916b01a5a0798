// Readable errors: every exception the library throws names the field, file or offset at fault.
#pragma once

#include <cstddef>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace distopt {

namespace detail {

template <class T>
void append_one(std::ostringstream& out, const T& part) {
  out << part;
}

// Shapes appear in many messages; print them the way PyTorch does: [384, 1600].
template <class T>
void append_one(std::ostringstream& out, const std::vector<T>& values) {
  out << '[';
  for (std::size_t i = 0; i < values.size(); ++i) out << (i ? ", " : "") << values[i];
  out << ']';
}

}  // namespace detail

/// Concatenates the parts of a message with `operator<<`, so a check reads as one sentence.
template <class... Parts>
[[nodiscard]] std::string message(const Parts&... parts) {
  std::ostringstream out;
  out.precision(9);  // enough digits to tell two floats apart in a message
  (detail::append_one(out, parts), ...);
  return out.str();
}

/// Throws `Error` (a standard exception type taking a string) with the concatenated message.
template <class Error = std::invalid_argument, class... Parts>
[[noreturn]] void fail(const Parts&... parts) {
  throw Error(message(parts...));
}

/// `require(cond, parts...)`: the one-line precondition check used for every option and input.
template <class Error = std::invalid_argument, class... Parts>
void require(bool condition, const Parts&... parts) {
  if (!condition) fail<Error>(parts...);
}

}  // namespace distopt
