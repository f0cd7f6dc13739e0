package devcluster

import "github.com/domicile/domicile/residency"

func residencyFacts(email string) residency.Facts { return residency.Facts{Email: email} }
