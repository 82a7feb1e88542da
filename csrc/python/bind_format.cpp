// SPDX-License-Identifier: Apache-2.0
// Writing .pyem files from Python.
#include "common.h"
#include "format/writer.h"
#include "kernels/conv_nchwc.h"
#include "kernels/dispatch.h"
#include "python/bindings.h"

namespace pyengine::python {

DType dtype_of(const py::dtype& dt, const std::string& what) {
    if (dt.byteorder() == '>') {
        throw InvalidArgument(str(what, " is big-endian; pass a native-endian array (arr.astype(arr.dtype.newbyteorder('=')))"));
    }
    DType t;
    const std::string name = py::str(dt);
    if (dtype_from_name(name, &t)) return t;
    throw InvalidArgument(str(what, " has dtype ", name,
                              "; expected float32, float64, int8/16/32/64, uint8/16/32/64 or bool"));
}

py::dtype numpy_dtype(DType t) { return py::dtype(std::string(dtype_name(t))); }

void register_format(py::module_& m) {
    m.def("write_pyem", [](const std::string& path, const std::string& graph_json, py::list tensors) {
        std::vector<TensorToWrite> items;
        std::vector<py::array> keep;  // contiguous copies stay alive until written
        for (py::handle h : tensors) {
            auto pair = h.cast<py::tuple>();
            if (pair.size() != 2) throw InvalidArgument("each tensor must be a (name, array) pair");
            const std::string name = pair[0].cast<std::string>();
            py::array arr = py::array::ensure(pair[1], py::array::c_style);
            if (!arr) throw InvalidArgument(str("tensor '", name, "' is not an array"));
            TensorToWrite t;
            t.name = name;
            t.dtype = dtype_of(arr.dtype(), str("tensor '", name, "'"));
            for (py::ssize_t d = 0; d < arr.ndim(); ++d) t.shape.push_back(static_cast<int64_t>(arr.shape(d)));
            t.data = arr.data();
            t.length = static_cast<size_t>(arr.nbytes());
            keep.push_back(arr);
            items.push_back(std::move(t));
        }
        GilRelease release;
        write_pyem(path, graph_json, items);
    }, py::arg("path"), py::arg("graph_json"), py::arg("tensors"),
       "Write a .pyem file: graph JSON text and (name, array) tensors, atomically.");
    m.def("pack_conv_weights", [](py::array_t<float, py::array::c_style | py::array::forcecast> w, int64_t groups,
                                  int block) -> py::object {
        if (block != 4 && block != 8 && block != 16) throw InvalidArgument(str("block ", block, " is not 4, 8 or 16"));
        Shape shape(w.shape(), w.shape() + w.ndim());
        NchwcConv c;
        if (!nchwc_conv_for_weights(shape, groups, block, &c)) return py::none();
        const std::vector<float> packed = nchwc_pack_conv_weights(c, w.data());
        py::array_t<float> out(nchwc_packed_weight_shape(c));
        std::copy(packed.begin(), packed.end(), out.mutable_data());
        return std::move(out);
    }, py::arg("weight"), py::arg("groups"), py::arg("block"),
       "An NCHW Conv2D's OIHW float32 weight in the blocked form the engine uses for `block` (4, 8 "
       "or 16), as a .pyem file stores it beside the plain one; None when this convolution has no "
       "blocked form (grouped channels that are not whole blocks).");
    m.def("nchwc_block", []() { return kernels().nchwc_block; },
          "The NCHW[c] block of the kernel variant in use (16 avx512, 8 avx2 and generic, 4 neon).");
}

}  // namespace pyengine::python
