// SPDX-License-Identifier: Apache-2.0
// A small JSON value, a strict parser for untrusted text (depth and size bounded) and a writer.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace pyengine::json {

enum class Type { Null, Bool, Number, String, Array, Object };

class Value {
public:
    Value() = default;
    static Value boolean(bool b);
    static Value number(double d);
    static Value string(std::string s);
    static Value array();
    static Value object();

    Type type() const { return type_; }
    bool is_null() const { return type_ == Type::Null; }
    bool is_bool() const { return type_ == Type::Bool; }
    bool is_number() const { return type_ == Type::Number; }
    bool is_string() const { return type_ == Type::String; }
    bool is_array() const { return type_ == Type::Array; }
    bool is_object() const { return type_ == Type::Object; }
    // True for numbers that are whole and fit in int64.
    bool is_integer() const;

    bool as_bool() const { return bool_; }
    double as_number() const { return number_; }
    int64_t as_int() const { return static_cast<int64_t>(number_); }
    const std::string& as_string() const { return string_; }
    const std::vector<Value>& items() const { return items_; }
    const std::vector<std::pair<std::string, Value>>& members() const { return members_; }

    // Object member by key, or nullptr.
    const Value* find(const std::string& key) const;
    void push_back(Value v) { items_.push_back(std::move(v)); }
    void set(std::string key, Value v);

    // Compact JSON text.
    std::string dump() const;

private:
    Type type_ = Type::Null;
    bool bool_ = false;
    double number_ = 0.0;
    std::string string_;
    std::vector<Value> items_;
    std::vector<std::pair<std::string, Value>> members_;
};

// Parses `text`; throws ModelFormatError("invalid JSON at offset N: ...") on any error.
Value parse(const char* text, size_t length, size_t max_depth = 64);

// True when `s` is well-formed UTF-8 (no overlongs, surrogates or code points past U+10FFFF).
bool valid_utf8(const std::string& s);

// Name of a type for messages ("string", "array", ...).
const char* type_name(Type t);

}  // namespace pyengine::json
