#include "crypto/secret.h"

#include <sodium.h>

#include <cstring>
#include <stdexcept>

namespace sotto::crypto {

void secure_wipe(void* p, std::size_t n) noexcept {
  if (p != nullptr && n != 0) sodium_memzero(p, n);
}

bool constant_time_equal(ByteView a, ByteView b) noexcept {
  if (a.size() != b.size()) return false;
  if (a.empty()) return true;
  return sodium_memcmp(a.data(), b.data(), a.size()) == 0;
}

SecretBuffer::SecretBuffer(std::size_t capacity)
    : data_(capacity ? new std::uint8_t[capacity]() : nullptr), size_(capacity), capacity_(capacity) {}

SecretBuffer::SecretBuffer(ByteView from) : SecretBuffer(from.size()) {
  if (!from.empty()) std::memcpy(data_.get(), from.data(), from.size());
}

SecretBuffer::~SecretBuffer() { release(); }

SecretBuffer::SecretBuffer(SecretBuffer&& other) noexcept
    : data_(std::move(other.data_)), size_(other.size_), capacity_(other.capacity_) {
  other.size_ = 0;
  other.capacity_ = 0;
}

SecretBuffer& SecretBuffer::operator=(SecretBuffer&& other) noexcept {
  if (this != &other) {
    release();
    data_ = std::move(other.data_);
    size_ = other.size_;
    capacity_ = other.capacity_;
    other.size_ = 0;
    other.capacity_ = 0;
  }
  return *this;
}

SecretBuffer SecretBuffer::clone() const {
  SecretBuffer copy(capacity_);
  if (capacity_) std::memcpy(copy.data_.get(), data_.get(), capacity_);
  copy.size_ = size_;
  return copy;
}

void SecretBuffer::resize(std::size_t n) {
  if (n > capacity_) throw std::length_error("SecretBuffer cannot grow beyond its capacity");
  if (n < size_) secure_wipe(data_.get() + n, size_ - n);
  size_ = n;
}

void SecretBuffer::release() noexcept {
  secure_wipe(data_.get(), capacity_);
  data_.reset();
  size_ = 0;
  capacity_ = 0;
}

}  // namespace sotto::crypto
