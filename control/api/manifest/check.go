package manifest

import (
	"errors"
	"fmt"
	"math"
	"strconv"

	"google.golang.org/protobuf/reflect/protoreflect"
)

// check walks a decoded JSON document against the message it must become
// and reports the first field that the message lacks or whose value has the
// wrong type, by its manifest path.
func check(md protoreflect.MessageDescriptor, doc map[string]any, path string) error {
	for name, v := range doc {
		p := join(path, name)
		fd := md.Fields().ByJSONName(name)
		if fd == nil {
			return fmt.Errorf("%s: unknown field: skiff does not support it", p)
		}
		if v == nil {
			continue
		}
		if f, ok := v.(float64); ok && intOrString[fd.FullName()] && f == math.Trunc(f) && math.Abs(f) < 1<<53 {
			v = strconv.FormatInt(int64(f), 10)
			doc[name] = v
		}
		if err := checkField(fd, v, p); err != nil {
			return err
		}
	}
	return nil
}

// intOrString are the string fields that, as Kubernetes' IntOrString
// fields, also take an integer (a port number where a port name would do):
// check writes the integer as its decimal string.
var intOrString = map[protoreflect.FullName]bool{
	"skiff.v1.HTTPGetAction.port":      true,
	"skiff.v1.TCPSocketAction.port":    true,
	"skiff.v1.ServicePort.target_port": true,
	// maxSurge and maxUnavailable: a count, or a percentage ("25%").
	"skiff.v1.RollingUpdateDeployment.max_surge":       true,
	"skiff.v1.RollingUpdateDeployment.max_unavailable": true,
}

func checkField(fd protoreflect.FieldDescriptor, v any, p string) error {
	switch {
	case fd.IsMap():
		m, ok := v.(map[string]any)
		if !ok {
			return typeError(p, "a mapping", v)
		}
		for k, mv := range m {
			if err := checkValue(fd.MapValue(), mv, p+"["+k+"]"); err != nil {
				return err
			}
		}
		return nil
	case fd.IsList():
		l, ok := v.([]any)
		if !ok {
			return typeError(p, "a list", v)
		}
		for i, e := range l {
			if err := checkValue(fd, e, fmt.Sprintf("%s[%d]", p, i)); err != nil {
				return err
			}
		}
		return nil
	}
	return checkValue(fd, v, p)
}

// checkValue checks one value of the field's type (one element of a list).
func checkValue(fd protoreflect.FieldDescriptor, v any, p string) error {
	switch fd.Kind() {
	case protoreflect.MessageKind:
		if fd.Message().FullName() == "google.protobuf.Timestamp" {
			if _, ok := v.(string); !ok {
				return typeError(p, "an RFC 3339 time", v)
			}
			return nil
		}
		m, ok := v.(map[string]any)
		if !ok {
			return typeError(p, "a mapping", v)
		}
		return check(fd.Message(), m, p)
	case protoreflect.StringKind:
		if _, ok := v.(string); !ok {
			return typeError(p, "a string", v)
		}
	case protoreflect.BoolKind:
		if _, ok := v.(bool); !ok {
			return typeError(p, "true or false", v)
		}
	case protoreflect.Int32Kind, protoreflect.Int64Kind, protoreflect.Uint32Kind, protoreflect.Uint64Kind:
		unsigned := fd.Kind() == protoreflect.Uint32Kind || fd.Kind() == protoreflect.Uint64Kind
		if s, ok := v.(string); ok {
			// Protobuf JSON writes 64-bit integers as strings.
			if _, err := strconv.ParseInt(s, 10, 64); err != nil && !unsigned {
				return typeError(p, "an integer", v)
			}
			if _, err := strconv.ParseUint(s, 10, 64); err != nil && unsigned {
				return typeError(p, "a non-negative integer", v)
			}
			return nil
		}
		f, ok := v.(float64)
		if !ok || f != math.Trunc(f) {
			return typeError(p, "an integer", v)
		}
		if f < 0 && unsigned {
			return fmt.Errorf("%s: invalid value %v: must not be negative", p, v)
		}
	case protoreflect.EnumKind:
		if _, ok := v.(string); !ok {
			return typeError(p, "a string", v)
		}
	case protoreflect.BytesKind:
		if _, ok := v.(string); !ok {
			return typeError(p, "a base64 string", v)
		}
	default:
		return errors.New(p + ": unsupported field type")
	}
	return nil
}

func typeError(p, want string, got any) error {
	return fmt.Errorf("%s: invalid type: want %s, got %s", p, want, describe(got))
}

func describe(v any) string {
	switch v := v.(type) {
	case string:
		return fmt.Sprintf("string %q", v)
	case float64:
		return fmt.Sprintf("number %v", v)
	case bool:
		return fmt.Sprintf("boolean %v", v)
	case []any:
		return "a list"
	case map[string]any:
		return "a mapping"
	}
	return fmt.Sprintf("%T", v)
}

func join(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}
